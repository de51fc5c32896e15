"""One module per recipe; thin flows that compose the tasks."""
