"""Plain HTTP clients for Iterable and Marketo: no Prefect, credentials passed in, transports injectable."""
