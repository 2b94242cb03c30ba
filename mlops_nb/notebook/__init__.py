"""Reading tagged notebooks: tags, sections, magics, the data-flow analysis. Pure functions.

analysis.py is the analysis of one step's code, over scanner (one statement), flow (order of
execution), defs (functions and classes), effects (what calls change), aliasing; namecheck
finds names a step reads that nothing defines.

The lowest layer above errors/project: it imports nothing else of mlops_nb.
"""
