from omnia.cli import main

main()
