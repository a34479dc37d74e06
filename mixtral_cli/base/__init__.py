"""The ground floor: errors, bounds, paths, atomic writes, system facts, text input, progress, units."""
