"""Pure payment domain: the attempt lifecycle table and how provider facts map onto it. No I/O."""
