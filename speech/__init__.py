"""Audio, speech recognition and synthesis for the voice bot."""
