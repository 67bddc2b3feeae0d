from agentsaga.cli import main

main()
