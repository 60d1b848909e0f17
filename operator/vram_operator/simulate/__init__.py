"""The simulated GPU runtime (`vram-operator simulate`): plays the engines of pods on KWOK GPU nodes."""
