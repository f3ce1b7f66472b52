"""What the agent remembers (imported as ``lift_tool.memory``): the adapter registry, the adapter pool on a
live model, and retrieval. It knows nothing of training, routing or graphs."""
