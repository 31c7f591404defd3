"""The generators of the measured pages in docs/, each a script run from the checkout (`python reports/X.py`);
what they measure with, and `hsvlt bench`'s code, is hsvlt.bench."""
