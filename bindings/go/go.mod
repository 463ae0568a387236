module kvbits.dev/kvbits

go 1.19
