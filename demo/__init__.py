"""wrenlm.demo"""
