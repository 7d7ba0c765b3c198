"""A sweep's report: statistics over seeds, figures, and the files and summary written from its runs."""
