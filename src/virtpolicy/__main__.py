from virtpolicy.cli.main import main

main()
