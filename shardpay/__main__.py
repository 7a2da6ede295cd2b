from shardpay.cli import main

main()
