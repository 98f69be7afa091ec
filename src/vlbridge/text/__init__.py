"""From structured conversations to token ids and labels, never by splitting rendered strings."""
