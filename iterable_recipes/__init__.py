"""iterable-recipes: the recipes, the vendor clients, the app store, the receiver, settings and the CLI."""
