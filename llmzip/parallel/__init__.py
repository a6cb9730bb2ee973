"""Many processes, one job: the team `accelerate launch` starts (`distributed`), and which
files each process takes (`jobs`). Exact arithmetic makes any split give the same bytes."""
