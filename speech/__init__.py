"""Audio, speech recognition and synthesis for the voice bot (issue 4)."""
