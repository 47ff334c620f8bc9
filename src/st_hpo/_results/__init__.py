"""What a study found: reading it back (best trial, export), the test score on demand, reports, retraining,
registering, and confirming the winner over seeds."""
