"""wrenlm.conversion"""
