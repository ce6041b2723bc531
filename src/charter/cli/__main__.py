from charter.cli import console_main

console_main()
