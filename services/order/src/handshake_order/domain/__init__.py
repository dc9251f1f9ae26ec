"""Pure order domain: lifecycle table, pricing. No I/O."""
