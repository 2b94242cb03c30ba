"""JupyterLab side of mlops_nb: the %mlops magic, widgets (experiments, pipeline, parameters,
step preview) and the compile-on-save server extension.

Models (experiments, pipeline, parameters, preview, loader) are plain functions over plain
data; views.py holds the ipywidgets that show them. Nothing here is imported by
`import mlops_nb`: the extension hooks import it on use.
"""
