"""`python -m dockerup`: the same command line as `docker-up`."""

from dockerup.cli.entry import main

main()
