"""What the operator's console reads and does: the audit log, the keys page's data."""
