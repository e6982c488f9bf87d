print("training")
print("with early stopping")
