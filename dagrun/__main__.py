from dagrun.cli import main

main()
