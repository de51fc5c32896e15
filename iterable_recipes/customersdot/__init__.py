"""Recipe 1, CustomersDot -> Iterable: the event contract, the event mapping and the drain engine."""
