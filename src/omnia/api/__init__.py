"""The Kubernetes API of Omnia: typed models, CRD generation, API reference.

``v1alpha1`` holds the models, the one source of truth; ``schemas`` turns them
into structural OpenAPI schemas, ``crds`` into CustomResourceDefinitions and
``reference`` into the Markdown API reference. All of it is pure code: the
``scripts/gen-crds`` command does the file I/O.
"""
