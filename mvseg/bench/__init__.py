"""`mvseg bench ...`: one module per benchmark, what they share in `common` (tables, JSON,
timing, memory, generated videos). The command-line options and their defaults are stated once,
in `mvseg.cli.bench`; these modules import torch and are imported when a bench runs."""
