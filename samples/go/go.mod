module kvbits.dev/samples/go

go 1.19

require kvbits.dev/kvbits v0.0.0

replace kvbits.dev/kvbits => ../../bindings/go
