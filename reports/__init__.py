"""The generators of the measured pages in docs/ (each a script, run from the checkout), and `measure`, how
they all time what they measure."""
