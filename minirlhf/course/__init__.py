"""Floor 7, the course: solution regions, student copies and the exercise checks."""
