"""The runtime: plans each minute, fires attempts, gathers them per minute, closes minutes and hands them to the writer."""
