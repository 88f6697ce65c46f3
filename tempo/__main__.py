from tempo.train import main

main()
