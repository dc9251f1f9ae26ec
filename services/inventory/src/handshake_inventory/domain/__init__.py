"""Pure inventory domain: reservation lifecycle table, stock movements, all-or-nothing allocation. No I/O."""
