from cronmetrics.cli.main import main

main()
