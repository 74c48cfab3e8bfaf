"""Training code for the three TruFor phases (``python -m training --phase 1|2|3``).

Imports ``reference``; nothing in the deployment path (export, engines, runtime) imports this package.
"""
