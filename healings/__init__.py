"""The door into healings: the one client that reports faults, decides approvals, lists and
shows healings."""
