"""The streaming pipeline: the Faust worker and its two stages, their watermarks, the
control records that close a finite input, and the dead-letter resend."""
