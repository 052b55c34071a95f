"""wrenlm.tokenization"""
