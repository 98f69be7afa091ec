"""vlbridge: efficient vision-language fine-tuning with small trained bridges."""

__version__ = "0.1.0"
