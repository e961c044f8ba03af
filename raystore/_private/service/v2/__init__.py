"""The Open Inference Protocol (KServe V2) for raystore's services: `codec` turns its messages into
numpy arrays and back."""
