"""Recipe 2, Marketo unsubscribes -> Iterable opt-outs: inbox keys, consent policy, the poll, decisions."""
