"""Recipe 2, Marketo unsubscribes -> Iterable opt-outs: inbox keys, the consent policy, the poll, decisions."""
