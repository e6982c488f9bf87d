"""Apply: the parallel, durable walk that executes a plan."""
