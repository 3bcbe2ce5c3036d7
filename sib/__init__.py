"""sib: the outcomes-payment calculator for social impact bonds.

The package reads in one direction: problems → money → period → yamlsafe → contract →
evidence → ledger → reconcile → workbook → issue → cli. Each module imports only from
those before it.
"""

__version__ = "0.1.0"
