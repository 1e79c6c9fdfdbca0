"""`python -m iee_deploy` runs the CLI (same as the `iee-deploy` console script)."""

from iee_deploy.cli import main

main()
