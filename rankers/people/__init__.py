"""People you may know: members two hops away in the connection graph."""
