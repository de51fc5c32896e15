"""Reusable Prefect tasks over the clients, the inbox and the warehouse; flows compose them."""

from iterable_recipes.masking import install_masking

# Every process that runs our tasks (serve, workers, flow-run subprocesses) masks what it logs.
install_masking()
