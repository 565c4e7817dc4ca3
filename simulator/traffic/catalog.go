package traffic

// Item is one product a store sells.
type Item struct {
	SKU         string
	Description string
	UnitPrice   int64 // minor units per unit (per kg for weighed items)
	TaxRate     int64 // basis points (2000 = 20%)
	Weighed     bool  // sold by weight: quantities are grams in thousandths of a kg
}

// Catalog is the products a simulated store sells, with prices in its
// currency's minor units.
var Catalog = []Item{
	{"4011", "Bananas", 199, 550, true},
	{"4131", "Apples Gala", 349, 550, true},
	{"4664", "Tomatoes on the vine", 429, 550, true},
	{"4062", "Cucumbers", 79, 550, false},
	{"3001", "Carrots", 149, 550, true},
	{"2101", "Ham, sliced", 1890, 550, true},
	{"2102", "Emmental", 1590, 550, true},
	{"2103", "Olives, green", 1290, 550, true},
	{"5000112", "Cola 1.5 l", 189, 1900, false},
	{"5000113", "Mineral water 6 x 1.5 l", 349, 1900, false},
	{"5000157", "Orange juice 1 l", 259, 550, false},
	{"8710398", "Coffee beans 1 kg", 1499, 550, false},
	{"8711000", "Tea, black, 25 bags", 229, 550, false},
	{"4006381", "Pencils, 12 pack", 399, 1900, false},
	{"4008400", "Chocolate bar 100 g", 129, 550, false},
	{"4017100", "Crisps 175 g", 219, 550, false},
	{"4056489", "Milk 1 l", 115, 550, false},
	{"4056490", "Butter 250 g", 259, 550, false},
	{"4056491", "Eggs, 10", 329, 550, false},
	{"4056492", "Yoghurt 500 g", 99, 550, false},
	{"4305615", "Bread, sourdough", 389, 550, false},
	{"4305616", "Croissant", 119, 550, false},
	{"4388844", "Pasta 500 g", 149, 550, false},
	{"4388845", "Rice 1 kg", 229, 550, false},
	{"4388846", "Olive oil 0.75 l", 899, 550, false},
	{"7622210", "Biscuits", 179, 550, false},
	{"9002490", "Energy drink", 139, 1900, false},
	{"4104420", "Dish soap", 249, 1900, false},
	{"4015000", "Laundry detergent", 1299, 1900, false},
	{"4005808", "Shampoo", 449, 1900, false},
	{"4210201", "Batteries AA, 4", 599, 1900, false},
	{"4009900", "Chewing gum", 99, 1900, false},
}
