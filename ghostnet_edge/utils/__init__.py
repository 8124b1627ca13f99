"""Small helpers shared by every stage (atomic files, hashing, seeding, versions)."""
