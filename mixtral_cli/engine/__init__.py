"""The only code that talks to llama.cpp (through llama-cpp-python's ctypes API)."""
