"""Pure rules of the console: wording, money formatting, search routing, charts. No I/O."""
