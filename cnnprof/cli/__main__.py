"""`python -m cnnprof.cli`."""
from cnnprof.cli import main

main()
