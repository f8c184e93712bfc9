from cronmetrics.cli.entry import main

main()
